"""Everything the API and the workers share: settings, database, models, migrations, domain logic, Twilio gateway."""
