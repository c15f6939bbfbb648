from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TransactionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUNNING: _ClassVar[TransactionStatus]
    COMMITTED: _ClassVar[TransactionStatus]
    ABORTED: _ClassVar[TransactionStatus]
RUNNING: TransactionStatus
COMMITTED: TransactionStatus
ABORTED: TransactionStatus

class TransactionTag(_message.Message):
    __slots__ = ("id", "status", "address")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: TransactionStatus
    address: str
    def __init__(self, id: _Optional[str] = ..., status: _Optional[_Union[TransactionStatus, str]] = ..., address: _Optional[str] = ...) -> None: ...

class MetadataRequest(_message.Message):
    __slots__ = ("tid", "responseAddress", "address")
    TID_FIELD_NUMBER: _ClassVar[int]
    RESPONSEADDRESS_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    tid: str
    responseAddress: str
    address: str
    def __init__(self, tid: _Optional[str] = ..., responseAddress: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("tid", "responseAddress", "addresses")
    TID_FIELD_NUMBER: _ClassVar[int]
    RESPONSEADDRESS_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    tid: str
    responseAddress: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tid: _Optional[str] = ..., responseAddress: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class TransactionRecord(_message.Message):
    __slots__ = ("id", "timestamp", "status", "replicaId", "writeSet", "readSet")
    class ReadSetEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REPLICAID_FIELD_NUMBER: _ClassVar[int]
    WRITESET_FIELD_NUMBER: _ClassVar[int]
    READSET_FIELD_NUMBER: _ClassVar[int]
    id: str
    timestamp: int
    status: TransactionStatus
    replicaId: str
    writeSet: _containers.RepeatedScalarFieldContainer[str]
    readSet: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., timestamp: _Optional[int] = ..., status: _Optional[_Union[TransactionStatus, str]] = ..., replicaId: _Optional[str] = ..., writeSet: _Optional[_Iterable[str]] = ..., readSet: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TransactionList(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[TransactionRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[TransactionRecord, _Mapping]]] = ...) -> None: ...

class KeyValuePair(_message.Message):
    __slots__ = ("key", "value", "cowrittenKeys", "tid", "timestamp")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COWRITTENKEYS_FIELD_NUMBER: _ClassVar[int]
    TID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    cowrittenKeys: _containers.RepeatedScalarFieldContainer[str]
    tid: str
    timestamp: int
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ..., cowrittenKeys: _Optional[_Iterable[str]] = ..., tid: _Optional[str] = ..., timestamp: _Optional[int] = ...) -> None: ...

class AftCommitRequest(_message.Message):
    __slots__ = ("record", "responseAddress")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    RESPONSEADDRESS_FIELD_NUMBER: _ClassVar[int]
    record: TransactionRecord
    responseAddress: str
    def __init__(self, record: _Optional[_Union[TransactionRecord, _Mapping]] = ..., responseAddress: _Optional[str] = ...) -> None: ...

class AftQuery(_message.Message):
    __slots__ = ("key", "tid", "responseAddress")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TID_FIELD_NUMBER: _ClassVar[int]
    RESPONSEADDRESS_FIELD_NUMBER: _ClassVar[int]
    key: str
    tid: str
    responseAddress: str
    def __init__(self, key: _Optional[str] = ..., tid: _Optional[str] = ..., responseAddress: _Optional[str] = ...) -> None: ...

class AftResponse(_message.Message):
    __slots__ = ("key", "found", "pointer", "data")
    KEY_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    POINTER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    key: str
    found: bool
    pointer: str
    data: bytes
    def __init__(self, key: _Optional[str] = ..., found: _Optional[bool] = ..., pointer: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class AftKeyRequest(_message.Message):
    __slots__ = ("tid", "pairs")
    class KeyPair(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    TID_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    tid: str
    pairs: _containers.RepeatedCompositeFieldContainer[AftKeyRequest.KeyPair]
    def __init__(self, tid: _Optional[str] = ..., pairs: _Optional[_Iterable[_Union[AftKeyRequest.KeyPair, _Mapping]]] = ...) -> None: ...
