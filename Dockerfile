# tpa-gis API image: slim, non-root, same entry point as `make run` (tpa CLI).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system tpa && useradd --system --gid tpa --home-dir /srv --shell /usr/sbin/nologin tpa
WORKDIR /srv

# Dependencies first (better layer caching), then the code. Editable install: the migrations and
# alembic.ini stay beside the package, where `tpa db upgrade` and /readyz look for them.
COPY pyproject.toml README.md ./
RUN mkdir app && touch app/__init__.py && pip install -e . && rm -rf app
COPY alembic.ini ./
COPY migrations ./migrations
COPY docs ./docs
COPY app ./app
RUN pip install --no-deps -e . && chown -R tpa:tpa /srv

USER tpa
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz').status == 200 else 1)"
CMD ["sh", "-c", "tpa db upgrade && tpa serve --host 0.0.0.0 --port 8000 --workers ${WORKERS:-2}"]
