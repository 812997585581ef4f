# Proctor: a policy-enforcing proxy for AI agent systems.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 RUST_BACKTRACE=0 \
    PROCTOR_HOST=0.0.0.0 PROCTOR_PORT=8080 PROCTOR_STORE=sqlite:////data/proctor.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY adapters ./adapters
COPY policies ./policies
RUN pip install --no-cache-dir . \
 && useradd --system --uid 10001 --home-dir /data proctor \
 && mkdir -p /data && chown proctor /data

USER proctor
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"
ENTRYPOINT ["proctor"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
