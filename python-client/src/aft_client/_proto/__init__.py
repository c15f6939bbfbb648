"""Generated protobuf modules (``anna_pb2``, ``aft_pb2``, ``aft_service_pb2``) and the gRPC
client stub (``aft_service_pb2_grpc``, needs ``grpcio``) from the repository's ``proto/``.

Produced by ``python-client/scripts/gen_protos.py``; do not edit the ``*_pb2*.py(i)`` files.
"""
