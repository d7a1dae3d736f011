# One image for every Lightbox process: `lightbox run <stage>` (see docker-compose.yml).
#   docker build -t lightbox:0.1.0 .
#   docker build --build-arg EXTRAS=ml -t lightbox:0.1.0-ml .   # diffusers backend, CLIP scoring
FROM python:3.11-slim

# Optional extras of the lightbox distribution (comma-separated, e.g. "ml"); empty installs the
# base package, whose compositor backend needs no model and no GPU.
ARG EXTRAS=""

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LIGHTBOX_HOME=/var/lib/lightbox

# OCR checks in the quality stage call the tesseract binary; only the ml extra uses it.
RUN if [ -n "$EXTRAS" ]; then \
        apt-get update && apt-get install -y --no-install-recommends tesseract-ocr \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --system --uid 10001 --home-dir /var/lib/lightbox --create-home lightbox

WORKDIR /src
# README.md* : the build reads it when present (pyproject's readme) without failing when absent.
COPY pyproject.toml README.md* ./
COPY schemas ./schemas
COPY processors ./processors
COPY gpu_workers ./gpu_workers
COPY gateway ./gateway
COPY deploy ./deploy
RUN pip install ".${EXTRAS:+[$EXTRAS]}"

USER lightbox
WORKDIR /var/lib/lightbox
ENTRYPOINT ["lightbox"]
CMD ["--help"]
