"""The service SDK's public path (`from genapi.service import Service`); it lives in `genapi.nodes.sdk`."""

from genapi.nodes.sdk import REQUEST_INFO, SUPPORTED_ANNOTATIONS, Service, annotation_type

__all__ = ["REQUEST_INFO", "SUPPORTED_ANNOTATIONS", "Service", "annotation_type"]
