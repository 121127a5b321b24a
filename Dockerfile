# roadprn container: CPU by default, CUDA with a build argument.
#   docker build -t roadprn .                                   # CPU
#   docker build -t roadprn:cuda --build-arg VARIANT=cuda .     # CUDA (torch wheel bundles CUDA)
#   docker run --rm -v "$PWD:/data" roadprn extract /data/scene.tif --out /data/out
#   docker run --rm --gpus all -v "$PWD:/data" roadprn:cuda extract /data/scene.tif --device cuda
# rasterio, pyogrio and shapely wheels bundle GDAL/GEOS/PROJ, so no system GIS libraries are needed.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

ARG VARIANT=cpu
ARG TORCH_VERSION=2.13.0
# CUDA wheel index tag used when VARIANT=cuda (e.g. cu126, cu128); the host needs a matching driver.
ARG CUDA_TAG=cu126

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, from the index of the chosen variant, so that the project's torch range is already
# satisfied and pip never swaps in another build.
RUN set -eux; \
    case "$VARIANT" in \
      cpu)  index="https://download.pytorch.org/whl/cpu" ;; \
      cuda) index="https://download.pytorch.org/whl/${CUDA_TAG}" ;; \
      *) echo "VARIANT must be cpu or cuda, got $VARIANT" >&2; exit 1 ;; \
    esac; \
    pip install "torch==${TORCH_VERSION}" --index-url "$index"

WORKDIR /opt/roadprn
COPY pyproject.toml README.md LICENSE NOTICE ./
COPY roadprn ./roadprn
COPY configs ./configs
RUN pip install . && roadprn --version

# Run as an unprivileged user; mount data at /data.
RUN useradd --create-home --uid 1000 roadprn && mkdir -p /data && chown roadprn /data
USER roadprn
WORKDIR /data
ENTRYPOINT ["roadprn"]
CMD ["--help"]
