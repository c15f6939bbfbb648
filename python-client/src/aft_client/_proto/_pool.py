"""The private descriptor pool that the generated modules register their messages in.

Kept apart from protobuf's default pool so that importing ``aft_client`` never clashes
with Cloudburst's or Anna's own generated ``anna_pb2`` (same top-level message names).
"""

from types import ModuleType

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()


def add_well_known(module: ModuleType) -> None:
    """Copy a well-known type's file (e.g. ``google.protobuf.empty_pb2``) into :data:`POOL`.

    A generated module that imports one calls this before adding its own file, which
    the pool refuses while a dependency is missing. Adding the same file twice is a no-op.
    """
    name = module.DESCRIPTOR.name
    try:
        POOL.FindFileByName(name)
    except KeyError:
        POOL.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
