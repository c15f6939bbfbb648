"""Generated protobuf modules (``anna_pb2``, ``aft_pb2``) from the repository's ``proto/``.

Produced by ``python-client/scripts/gen_protos.py``; do not edit the ``*_pb2.py(i)`` files.
"""
