# Production image: gunicorn serving memoryconnector.wsgi on :8000.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

RUN groupadd --system app \
    && useradd --system --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
    && install -d -o app -g app /var/lib/memoryconnector/metrics

# Dependencies first, so code changes don't invalidate this layer.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# collectstatic needs importable production settings (it never connects to the database);
# these values are throwaway,
# exist only for this RUN step and are not kept in the image's environment.
RUN DJANGO_SETTINGS_MODULE=memoryconnector.settings.production \
    DJANGO_SECRET_KEY=build-time-only-collectstatic-not-a-real-secret-0123456789 \
    JWT_SIGNING_KEY=build-time-only-collectstatic-not-a-real-secret \
    DJANGO_ALLOWED_HOSTS=localhost \
    DATABASE_URL=postgres://build@localhost/build \
    python manage.py collectstatic --noinput

# Code and static files stay root-owned (read-only for the app user).
USER app

ENV DJANGO_SETTINGS_MODULE=memoryconnector.settings.production

EXPOSE 8000

CMD ["gunicorn", "memoryconnector.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "2", "--access-logfile", "-"]
