"""Contextualization: cloud-init user-data, SSH host keys and the node environment."""

from launchplan.ctx.environment import context_document, node_environment, stage_dir
from launchplan.ctx.hostkeys import (
    HostKey,
    fingerprint,
    generate_client_key,
    generate_host_key,
    parse_console_fingerprints,
)
from launchplan.ctx.userdata import (
    UserDataPart,
    build_userdata,
    check_cloud_config,
    detect_content_type,
    parse_userdata,
    redact,
    redact_userdata,
)

__all__ = [
    "HostKey",
    "UserDataPart",
    "build_userdata",
    "check_cloud_config",
    "context_document",
    "detect_content_type",
    "fingerprint",
    "generate_client_key",
    "generate_host_key",
    "node_environment",
    "parse_console_fingerprints",
    "parse_userdata",
    "redact",
    "redact_userdata",
    "stage_dir",
]
