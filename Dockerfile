# regmirror container image: a release build on Debian bookworm, run as a non-root user.
#
#   docker build -t regmirror .            # or, with no daemon: buildah build -t regmirror .
#   docker run --rm regmirror --help
#
# Base images are named in full (docker.io/library/...) so that buildah and podman, which refuse
# unqualified names unless registries.conf lists search registries, build it as Docker does.
# deploy/kubernetes runs this image (runAsUser 10001 matches USER below) and so do the AWS
# recipes; tests/recipes.rs runs their commands on this ENTRYPOINT and CMD.
#
# ENTRYPOINT is the binary and CMD is --once, so running the image with no arguments does one
# pass and exits (0 all mirrored, 1 some image failed, 2 bad config or usage); the AWS recipes in
# deploy/ run it like that, with REGMIRROR_SSM_PARAMETER and REGMIRROR_TARGET in the environment.
# Arguments after the image name replace --once, e.g. `--once --ssm-parameter ... --target ...`,
# or `--config /etc/regmirror/mirrors.toml` (mounted) to run the daemon.
# The image holds no config file: give one with --config/REGMIRROR_CONFIG, or use
# --ssm-parameter and --target.

FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin regmirror

FROM docker.io/library/debian:bookworm-slim
# CA certificates for HTTPS to the registries and AWS; nothing else. Unpinned on purpose: the
# bookworm security updates to ca-certificates should be picked up by a rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin regmirror
COPY --from=build /src/target/release/regmirror /usr/local/bin/regmirror
# Numeric, so that runtimes that enforce "not root" (Kubernetes runAsNonRoot) can check it.
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/regmirror"]
CMD ["--once"]
