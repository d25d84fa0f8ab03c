"""``pull`` and ``push``: images between a registry and the store.

A pull resolves a manifest list or OCI index to the host's platform, downloads
every missing blob into the store (each verified against its digest; a mismatch
stores nothing), unpacks the layers (checked for escapes), and names the image
last, so an interrupted or failed pull leaves no name and the next pull resumes
the partial downloads or starts them over.
"""

from __future__ import annotations

from runtime.images.digest import digest_bytes
from runtime.images.errors import DigestMismatch, ManifestError
from runtime.images.layers import lower_dirs, short
from runtime.images.oci import (
    INDEX_TYPES,
    Descriptor,
    Platform,
    host_platform,
    kind_of,
    parse_config,
    parse_index,
    parse_manifest,
    select_platform,
)
from runtime.images.progress import Progress
from runtime.images.reference import Reference, parse_reference, registry_host
from runtime.images.registry import Credentials, RegistryClient
from runtime.images.store import ImageStore


def pull(
    store: ImageStore, reference: str, credentials: Credentials | None = None,
    insecure: bool = False, platform: Platform | None = None,
    progress: Progress | None = None, client: RegistryClient | None = None,
) -> str:
    """Pull ``reference`` into ``store``; the canonical name it is stored under."""
    ref = parse_reference(reference)
    client = client or RegistryClient(registry_host(ref.domain), credentials, insecure)
    repo = ref.path
    want = platform or host_platform()
    target = ref.digest or ref.tag or "latest"
    data, media_type = client.get_manifest(repo, target)
    digest = _check_manifest(data, ref.digest, f"{ref.familiar}")
    media_type = kind_of(data, media_type, f"manifest of {ref.familiar}")
    if media_type in INDEX_TYPES:
        chosen = select_platform(parse_index(data, f"index of {ref.familiar}"), want,
                                 f"index of {ref.familiar}")
        data, media_type = client.get_manifest(repo, chosen.digest)
        digest = _check_manifest(data, chosen.digest, f"{ref.familiar} for {want}")
        media_type = kind_of(data, media_type, f"manifest {chosen.digest}")
    manifest = parse_manifest(data, f"manifest {digest}")
    with store.writing():
        for blob in (manifest.config, *manifest.layers):
            _fetch(store, client, repo, blob, progress)
        config = parse_config(store.read_blob(manifest.config.digest),
                              f"config of {ref.familiar}")
        if len(config.diff_ids) != len(manifest.layers):
            raise ManifestError(f"{ref.familiar}: {len(manifest.layers)} layers, "
                                f"{len(config.diff_ids)} diff ids in the config")
        store.put_blob(data, digest)
        lower_dirs(store, digest)
        return store.set_name(ref, Descriptor(media_type, digest, len(data)))


def push(
    store: ImageStore, name: str, destination: str | None = None,
    credentials: Credentials | None = None, insecure: bool = False,
    progress: Progress | None = None, client: RegistryClient | None = None,
) -> str:
    """Push the stored image ``name`` to ``destination`` (default: its own name); its digest."""
    digest = store.resolve(name)
    data = store.read_blob(digest)
    media_type = kind_of(data, "", f"manifest {digest}")
    manifest = store.manifest(digest)
    ref: Reference = parse_reference(destination or name)
    client = client or RegistryClient(registry_host(ref.domain), credentials, insecure)
    for blob in (*manifest.layers, manifest.config):
        label = short(blob.digest)
        if client.has_blob(ref.path, blob.digest, push=True):
            if progress:
                progress.finish(label, "exists")
            continue
        if progress:
            progress.start(label, blob.size)
        with open(store.blob_path(blob.digest), "rb") as f:
            client.upload_blob(ref.path, blob.digest, blob.size, f)
        if progress:
            progress.finish(label, "pushed")
    client.put_manifest(ref.path, ref.tag or digest, data, media_type)
    return digest


def _check_manifest(data: bytes, expected: str | None, what: str) -> str:
    actual = digest_bytes(data)
    if expected is not None and actual != expected:
        raise DigestMismatch(f"manifest of {what}", expected, actual)
    return actual


def _fetch(store: ImageStore, client: RegistryClient, repo: str, blob: Descriptor,
           progress: Progress | None) -> None:
    label = short(blob.digest)
    with store.blob_writer(blob.digest, f"blob {blob.digest} of {repo}") as writer:
        if writer.done:
            if progress:
                progress.finish(label, "already present")
            return
        if progress:
            progress.start(label, blob.size)
        client.fetch_blob(repo, blob.digest, blob.size, writer, progress)
        if progress:
            progress.finish(label)
