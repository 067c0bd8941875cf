# tpa-gis image: the API (tpa serve) and the job worker (tpa worker) — the same entry point as `make run`.
#
# Two stages. The first installs the dependencies and the project into /opt/venv and /srv. The second copies them
# onto a clean base with only the shared library LightGBM needs (OpenMP): no compilers, pip caches, test suites or
# bytecode. Without a registry of base images, `make images` builds the base from Debian with debootstrap and passes
# it as PYTHON_IMAGE (docs/operations.md#containers).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /srv
# Dependencies first (a layer that survives code changes), then the project itself, editable: the migrations and
# alembic.ini stay beside the package, where `tpa db upgrade` and /readyz look for them.
COPY pyproject.toml README.md ./
RUN mkdir app && touch app/__init__.py && pip install . && pip uninstall -y tpa-gis && rm -rf app build *.egg-info
COPY alembic.ini babel.cfg ./
COPY migrations ./migrations
COPY docs/methodology.md docs/operations.md ./docs/
COPY app ./app
# Left out: test suites inside packages, bytecode, C headers and Cython sources, pip and setuptools; shared libraries
# lose their symbol tables (strip --strip-unneeded: what the dynamic linker needs stays), except the libraries
# auditwheel vendored into *.libs: patchelf rewrote them, and strip leaves them unloadable (numpy's OpenBLAS)
RUN pip install --no-deps -e . \
 && apt-get update && apt-get install -y --no-install-recommends binutils \
 && find /opt/venv -depth -type d \( -name tests -o -name __pycache__ \) -path '*/site-packages/*' \
      -exec rm -rf {} + \
 && rm -rf /opt/venv/lib/python3*/site-packages/pyarrow/include /opt/venv/lib/python3*/site-packages/pip \
      /opt/venv/lib/python3*/site-packages/setuptools \
 && find /opt/venv/lib -type f \( -name '*.pyx' -o -name '*.pxd' -o -name '*.h' \) -delete \
 && find /opt/venv/lib -type f -name '*.so*' -not -path '*.libs/*' -exec strip --strip-unneeded {} +

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH PORT=8000 WORKERS=2 \
    MPLCONFIGDIR=/tmp/matplotlib
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && groupadd --system tpa && useradd --system --gid tpa --home-dir /srv --shell /usr/sbin/nologin tpa
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=tpa:tpa /srv /srv
WORKDIR /srv
USER tpa
EXPOSE 8000
# TCP, on the port the server listens on (PORT)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
  CMD python3 -c "import os, sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4).status != 200)"
# exec: the server becomes PID 1 and gets docker stop's SIGTERM (a clean shutdown, jobs recorded as interrupted)
CMD ["sh", "-c", "tpa db upgrade --wait 60 && exec tpa serve --host 0.0.0.0 --port \"$PORT\" --workers \"$WORKERS\""]
