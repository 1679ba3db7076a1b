"""The Celery side: `celery -A worker.app worker` sends chunks; `... beat` schedules the sweeper."""
