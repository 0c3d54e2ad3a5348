"""pipeparse: concurrent processing of pipelined HTTP/1.1 requests.

The sans-I/O core: a seekable receive buffer, an incremental request index with strict framing,
and request head parsing. The trio servers (`servers/`) and the load client (`clients/`) are built
on these names only.
"""

from __future__ import annotations

from ._buffer import SeekableBuffer as SeekableBuffer
from ._errors import BufferFull as BufferFull
from ._errors import ProtocolError as ProtocolError
from ._head import RequestHead as RequestHead
from ._head import parse_request_head as parse_request_head
from ._index import FramedRequest as FramedRequest
from ._index import RequestIndex as RequestIndex
from ._limits import KiB as KiB
from ._limits import Limits as Limits
from ._limits import MiB as MiB
from ._native import BodySource as BodySource
from ._native import HttpRequest as HttpRequest
from ._native import Response as Response
from ._oneshot import Request as Request
from ._oneshot import parse_requests as parse_requests

__all__ = [
    "BodySource",
    "BufferFull",
    "FramedRequest",
    "HttpRequest",
    "KiB",
    "Limits",
    "MiB",
    "ProtocolError",
    "Request",
    "RequestHead",
    "RequestIndex",
    "Response",
    "SeekableBuffer",
    "parse_request_head",
    "parse_requests",
]

__version__ = "0.1.0"
