# Wheel builds per CUDA major x CPU arch, with release/Dockerfile. From the
# repository root:
#
#   docker buildx bake -f release/docker-bake.hcl                 # default: x86_64 wheels, cu13 + cu12
#   docker buildx bake -f release/docker-bake.hcl all             # every CUDA major and arch
#   docker buildx bake -f release/docker-bake.hcl cu12-aarch64    # one wheel
#   docker buildx bake -f release/docker-bake.hcl --print all     # the resolved configuration
#
# Each target writes its wheel to dist/<target>/; `--set '*.output=type=local,dest=dist'`
# puts them all in dist/. Override a variable from the environment, e.g.
# CUDA_12_VERSION=12.8 docker buildx bake -f release/docker-bake.hcl cu12.

# The toolkit release used for each CUDA major (a package of NVIDIA's RHEL 8 repository).
variable "CUDA_13_VERSION" {
  default = "13.0"
}

variable "CUDA_12_VERSION" {
  default = "12.9"
}

# The CPython in the manylinux image that runs the build (the wheel serves every CPython >= 3.9).
variable "PYTHON" {
  default = "/opt/python/cp311-cp311/bin/python"
}

variable "MANYLINUX" {
  default = "manylinux_2_28"
}

# Pin a dated manylinux tag for reproducible releases.
variable "MANYLINUX_TAG" {
  default = "latest"
}

# CMake CUDA architectures; empty: pyproject.toml's default list.
variable "SAGEATTN_CUDA_ARCHS" {
  default = ""
}

variable "OUTPUT_DIR" {
  default = "dist"
}

target "_wheel" {
  context    = "."
  dockerfile = "release/Dockerfile"
  target     = "wheels"
  args = {
    MANYLINUX           = MANYLINUX
    MANYLINUX_TAG       = MANYLINUX_TAG
    PYTHON              = PYTHON
    SAGEATTN_CUDA_ARCHS = SAGEATTN_CUDA_ARCHS
  }
}

target "_x86_64" {
  platforms = ["linux/amd64"]
  args = {
    ARCH = "x86_64"
  }
}

target "_aarch64" {
  platforms = ["linux/arm64"]
  args = {
    ARCH = "aarch64"
  }
}

target "_cu13" {
  args = {
    CUDA_MAJOR   = "13"
    CUDA_VERSION = CUDA_13_VERSION
  }
}

target "_cu12" {
  args = {
    CUDA_MAJOR   = "12"
    CUDA_VERSION = CUDA_12_VERSION
  }
}

target "cu13-x86_64" {
  inherits = ["_wheel", "_cu13", "_x86_64"]
  output   = ["type=local,dest=${OUTPUT_DIR}/cu13-x86_64"]
}

target "cu13-aarch64" {
  inherits = ["_wheel", "_cu13", "_aarch64"]
  output   = ["type=local,dest=${OUTPUT_DIR}/cu13-aarch64"]
}

target "cu12-x86_64" {
  inherits = ["_wheel", "_cu12", "_x86_64"]
  output   = ["type=local,dest=${OUTPUT_DIR}/cu12-x86_64"]
}

target "cu12-aarch64" {
  inherits = ["_wheel", "_cu12", "_aarch64"]
  output   = ["type=local,dest=${OUTPUT_DIR}/cu12-aarch64"]
}

group "default" {
  targets = ["cu13-x86_64", "cu12-x86_64"]
}

group "all" {
  targets = ["cu13-x86_64", "cu13-aarch64", "cu12-x86_64", "cu12-aarch64"]
}

group "cu13" {
  targets = ["cu13-x86_64", "cu13-aarch64"]
}

group "cu12" {
  targets = ["cu12-x86_64", "cu12-aarch64"]
}
