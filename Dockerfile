# The image of every application service in docker-compose.yml: web, ingest,
# worker, beat, Flower and the one-shot migrate. Build: docker build -t whatsapp-handler .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --system --create-home --uid 10001 app

# The dependencies first, at the exact versions and hashes of the lock (make lock
# refreshes it), in a layer of their own that a change to the code does not rebuild.
COPY requirements/runtime.lock ./requirements/
RUN pip install --require-hashes -r requirements/runtime.lock
COPY pyproject.toml README.md manage.py Procfile ./
COPY config ./config
COPY core ./core
COPY whatsapp ./whatsapp
COPY leads ./leads
COPY dlq ./dlq
# The reference classifier is an installed app (and `manage.py classify`, a process of the stack).
COPY classifier ./classifier
# The agent inbox is an installed app (its pages, its reply task).
COPY inbox ./inbox
RUN pip install --no-deps .

# The admin's static files, served by whitenoise from gunicorn. collectstatic
# needs settings to load but touches no database; the key is thrown away.
ENV STATIC_ROOT=/app/static
# A random key (a published one is refused, config/hardening.py), made and dropped in this step.
RUN SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(50))')" python manage.py collectstatic --noinput

USER app
EXPOSE 8000 5555 9108
CMD ["gunicorn", "-c", "config/gunicorn.py", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--no-control-socket"]
