from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class CreateLogStreamRequest(_message.Message):
    __slots__ = ("parent",)
    PARENT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    def __init__(self, parent: _Optional[str] = ...) -> None: ...

class LogStream(_message.Message):
    __slots__ = ("name", "write_resource_name")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WRITE_RESOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    write_resource_name: str
    def __init__(self, name: _Optional[str] = ..., write_resource_name: _Optional[str] = ...) -> None: ...
