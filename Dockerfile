# The image every bulksms service in docker-compose.yml runs: migrations, the API (gunicorn), the Celery worker
# and beat, and the Twilio simulator. Flower uses the upstream mher/flower image (see docker-compose.yml).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, in their own layer, so a code change does not reinstall them: the exact versions of
# requirements.lock (generated from pyproject.toml by `make lock`), each checked against its hash.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

COPY pyproject.toml README.md LICENSE ./
COPY api ./api
COPY worker ./worker
COPY shared ./shared
COPY bulksms_tools ./bulksms_tools
RUN pip install --no-deps .

# Never run as root; /data holds beat's schedule (a volume in docker-compose.yml).
RUN useradd --create-home --uid 10001 bulksms \
    && mkdir -p /data && chown bulksms:bulksms /data
USER bulksms
ENV BULKSMS_DATA_DIR=/data

EXPOSE 8000
CMD ["bulksms", "--help"]
