"""compose.yaml: valid against the Compose specification's schema, one GPU service per worker.

There is no Docker engine on the machine these tests run on (nor a GPU), so nothing here starts a
container. They check the file Docker would read: the Compose specification's JSON schema, the
structure the harness's docker runtime relies on (a profile, a GPU, a health check, ports on
127.0.0.1 only, secrets), one framework version in the requirements, the image tag and the build
argument, and each worker's base image as its worker.toml declares it. The one-command check on a real GPU host is bin/gpu-smoke-test.
"""

from __future__ import annotations

import copy
import re

import pytest

from container_files import (CONTAINER_PORT, REPO_ROOT, SECRET_NAMES, WORKER_IDS, WORKERS, compose, declared_base_image,
                             schema_errors, service_of, variable_of)
from cxrbench_worker.requirements import pinned_version

# --- 1. compose.yaml is a valid Compose file ----------------------------------------------------

def test_compose_file_validates_against_the_compose_specification_schema():
    assert schema_errors(compose()) == []


def test_compose_schema_validator_rejects_an_unknown_service_key():
    """The check above can fail: a misspelt key in a service is an error, not ignored."""
    broken = copy.deepcopy(compose())
    broken["services"][WORKER_IDS[0]]["gpu_reservation"] = "nvidia"
    errors = schema_errors(broken)
    assert any("gpu_reservation" in error for error in errors), errors


def test_compose_schema_validator_rejects_gpu_capabilities_given_as_a_string():
    broken = copy.deepcopy(compose())
    broken["services"][WORKER_IDS[0]]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] = "gpu"
    errors = schema_errors(broken)
    assert any("capabilities" in error for error in errors), errors


# --- 4. one framework version everywhere ---------------------------------------------------------

IMAGE_TAG = re.compile(r"^cxrbench/(?P<name>[a-z0-9_-]+):\$\{(?P<variable>[A-Z0-9_]+):-(?P<default>[^}]+)\}$")
PUBLISHED_PORT = re.compile(rf"^127\.0\.0\.1:\$\{{(?P<variable>[A-Z0-9_]+):-(?P<default>[0-9]+)\}}:{CONTAINER_PORT}$")
VERSION_VARIABLE = re.compile(r"^\$\{(?P<variable>[A-Z0-9_]+):-(?P<default>[^}]+)\}$")


@pytest.mark.parametrize("folder", WORKERS, ids=WORKER_IDS)
def test_framework_version_is_the_same_in_requirements_image_tag_and_build_argument(folder):
    pinned = pinned_version(folder)
    assert pinned, f"{folder.requirements}: no {folder.framework_package}== pin"
    name = service_of(folder)
    variable = f"{variable_of(name)}_VERSION"
    service = compose()["services"][name]

    tag = IMAGE_TAG.match(service["image"])
    assert tag, f"image {service['image']!r}: expected cxrbench/{name}:${{{variable}:-{pinned}}}"
    assert (tag["name"], tag["variable"], tag["default"]) == (name, variable, pinned)

    build_argument = VERSION_VARIABLE.match(str(service["build"]["args"]["FRAMEWORK_VERSION"]))
    assert build_argument, f"build.args.FRAMEWORK_VERSION must be ${{{variable}:-{pinned}}}"
    assert (build_argument["variable"], build_argument["default"]) == (variable, pinned)
    assert service["build"]["args"]["WORKER"] == folder.name
    assert service["build"]["args"]["VARIANT"] == (folder.variant or ""), "the variant the image runs"


# Each framework's wheels bring their own CUDA; the base image's CUDA version is what the host driver
# must support (worker.toml says why for each).
CUDA_OF_BASE = {"pytorch": "13.0.0", "tensorflow": "12.8.1", "keras": "12.8.1", "jax": "13.0.0", "keras-jax": "13.0.0",
                "keras-torch": "13.0.0"}


@pytest.mark.parametrize("folder", WORKERS, ids=WORKER_IDS)
def test_base_image_build_argument_is_the_cuda_base_image_the_worker_toml_declares(folder):
    declared = declared_base_image(folder)
    assert declared, f"{folder.path / 'worker.toml'}: no [gpu] base_image"
    assert compose()["services"][service_of(folder)]["build"]["args"]["BASE_IMAGE"] == declared, \
        f"compose.yaml's BASE_IMAGE of '{service_of(folder)}' differs from {folder.path / 'worker.toml'}'s base_image"
    # A CUDA "base" image (the wheels bring CUDA and cuDNN) on Ubuntu 24.04 (Python 3.12, as the locks allow).
    assert declared.split("@", 1)[0] == f"nvidia/cuda:{CUDA_OF_BASE[service_of(folder)]}-base-ubuntu24.04"


# --- 5. what the docker runtime relies on ---------------------------------------------------------

def test_compose_has_one_service_per_listed_worker_and_variant_and_no_other():
    assert sorted(compose()["services"]) == sorted(WORKER_IDS)
    assert "null" not in compose()["services"]
    assert not (REPO_ROOT / "workers" / "null" / "locks").exists(), "the null worker installs nothing"


@pytest.mark.parametrize("name", WORKER_IDS)
def test_compose_service_has_its_profile_a_gpu_a_health_check_loopback_ports_and_the_secrets(name):
    service = compose()["services"][name]
    assert service["profiles"] == [name]
    assert service["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "cxrbench_worker.health_probe"]
    assert service.get("network_mode") != "host", "host networking would bypass the loopback-only ports"
    assert len(service["ports"]) == 1
    for port in service["ports"]:
        assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{port!r} is published beyond this host"
        assert PUBLISHED_PORT.match(port) and PUBLISHED_PORT.match(port)["variable"] == f"{variable_of(name)}_PORT", \
            f"{port!r}: expected 127.0.0.1:${{{variable_of(name)}_PORT:-<port>}}:{CONTAINER_PORT}"
    assert sorted(service["secrets"]) == sorted(SECRET_NAMES)


def test_compose_secrets_come_from_the_harness_secrets_folder_and_default_ports_differ():
    document = compose()
    assert {name: spec["file"] for name, spec in document["secrets"].items()} == {
        "worker_tls_cert": "${CXRBENCH_SECRETS:-./.secrets}/tls.crt",
        "worker_tls_key": "${CXRBENCH_SECRETS:-./.secrets}/tls.key",
        "worker_token": "${CXRBENCH_SECRETS:-./.secrets}/token",
    }
    defaults = [PUBLISHED_PORT.match(service["ports"][0])["default"] for service in document["services"].values()]
    assert len(set(defaults)) == len(defaults), f"two services default to the same host port: {defaults}"
