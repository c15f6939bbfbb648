"""The private descriptor pool that the generated modules register their messages in.

Kept apart from protobuf's default pool so that importing ``aft_client`` never clashes
with Cloudburst's or Anna's own generated ``anna_pb2`` (same top-level message names).
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
