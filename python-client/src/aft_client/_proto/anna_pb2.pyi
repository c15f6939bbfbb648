from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RequestType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RT_UNSPECIFIED: _ClassVar[RequestType]
    GET: _ClassVar[RequestType]
    PUT: _ClassVar[RequestType]

class LatticeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NONE: _ClassVar[LatticeType]
    LWW: _ClassVar[LatticeType]
    SET: _ClassVar[LatticeType]
    SINGLE_CAUSAL: _ClassVar[LatticeType]
    MULTI_CAUSAL: _ClassVar[LatticeType]
    ORDERED_SET: _ClassVar[LatticeType]
    PRIORITY: _ClassVar[LatticeType]

class AnnaError(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NO_ERROR: _ClassVar[AnnaError]
    KEY_DNE: _ClassVar[AnnaError]
    WRONG_THREAD: _ClassVar[AnnaError]
    TIMEOUT: _ClassVar[AnnaError]
    LATTICE: _ClassVar[AnnaError]
    NO_SERVERS: _ClassVar[AnnaError]
RT_UNSPECIFIED: RequestType
GET: RequestType
PUT: RequestType
NONE: LatticeType
LWW: LatticeType
SET: LatticeType
SINGLE_CAUSAL: LatticeType
MULTI_CAUSAL: LatticeType
ORDERED_SET: LatticeType
PRIORITY: LatticeType
NO_ERROR: AnnaError
KEY_DNE: AnnaError
WRONG_THREAD: AnnaError
TIMEOUT: AnnaError
LATTICE: AnnaError
NO_SERVERS: AnnaError

class KeyTuple(_message.Message):
    __slots__ = ("key", "lattice_type", "error", "payload", "address_cache_size", "invalidate")
    KEY_FIELD_NUMBER: _ClassVar[int]
    LATTICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_CACHE_SIZE_FIELD_NUMBER: _ClassVar[int]
    INVALIDATE_FIELD_NUMBER: _ClassVar[int]
    key: str
    lattice_type: LatticeType
    error: AnnaError
    payload: bytes
    address_cache_size: int
    invalidate: bool
    def __init__(self, key: _Optional[str] = ..., lattice_type: _Optional[_Union[LatticeType, str]] = ..., error: _Optional[_Union[AnnaError, str]] = ..., payload: _Optional[bytes] = ..., address_cache_size: _Optional[int] = ..., invalidate: _Optional[bool] = ...) -> None: ...

class KeyRequest(_message.Message):
    __slots__ = ("type", "tuples", "response_address", "request_id")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TUPLES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    type: RequestType
    tuples: _containers.RepeatedCompositeFieldContainer[KeyTuple]
    response_address: str
    request_id: str
    def __init__(self, type: _Optional[_Union[RequestType, str]] = ..., tuples: _Optional[_Iterable[_Union[KeyTuple, _Mapping]]] = ..., response_address: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class KeyResponse(_message.Message):
    __slots__ = ("type", "tuples", "response_id", "error")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TUPLES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    type: RequestType
    tuples: _containers.RepeatedCompositeFieldContainer[KeyTuple]
    response_id: str
    error: AnnaError
    def __init__(self, type: _Optional[_Union[RequestType, str]] = ..., tuples: _Optional[_Iterable[_Union[KeyTuple, _Mapping]]] = ..., response_id: _Optional[str] = ..., error: _Optional[_Union[AnnaError, str]] = ...) -> None: ...

class KeyAddressRequest(_message.Message):
    __slots__ = ("response_address", "keys", "request_id")
    RESPONSE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    response_address: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    def __init__(self, response_address: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class KeyAddressResponse(_message.Message):
    __slots__ = ("addresses", "error", "response_id")
    class KeyAddress(_message.Message):
        __slots__ = ("key", "ips")
        KEY_FIELD_NUMBER: _ClassVar[int]
        IPS_FIELD_NUMBER: _ClassVar[int]
        key: str
        ips: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, key: _Optional[str] = ..., ips: _Optional[_Iterable[str]] = ...) -> None: ...
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    addresses: _containers.RepeatedCompositeFieldContainer[KeyAddressResponse.KeyAddress]
    error: AnnaError
    response_id: str
    def __init__(self, addresses: _Optional[_Iterable[_Union[KeyAddressResponse.KeyAddress, _Mapping]]] = ..., error: _Optional[_Union[AnnaError, str]] = ..., response_id: _Optional[str] = ...) -> None: ...

class LWWValue(_message.Message):
    __slots__ = ("timestamp", "value")
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    timestamp: int
    value: bytes
    def __init__(self, timestamp: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...

class SetValue(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, values: _Optional[_Iterable[bytes]] = ...) -> None: ...
