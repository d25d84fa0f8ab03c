"""Container configuration: OCI config.json in, one validated ``ContainerConfig`` out."""

from runtime.spec.convert import Converted, convert, load_bundle
from runtime.spec.default import OCI_VERSION, default_config
from runtime.spec.model import ContainerConfig
from runtime.spec.validate import validate

__all__ = ["ContainerConfig", "Converted", "OCI_VERSION", "convert", "default_config",
           "load_bundle", "validate"]
