"""pipeparse: concurrent processing of pipelined HTTP/1.1 requests.

The sans-I/O core: a seekable receive buffer, an incremental request index with strict framing,
and request head parsing. The trio servers (`servers/`) and the load client (`clients/`) are built
on these names only.
"""

from __future__ import annotations

from . import actions as actions
from ._api import run as run
from ._api import serve as serve
from ._api import start_asyncio_server as start_asyncio_server
from ._buffer import MIN_BLOCK as MIN_BLOCK
from ._buffer import SeekableBuffer as SeekableBuffer
from ._connection import ConnectionTimeouts as ConnectionTimeouts
from ._connection import ServerConnection as ServerConnection
from ._errors import BufferFull as BufferFull
from ._errors import ProtocolError as ProtocolError
from ._head import RequestHead as RequestHead
from ._head import parse_request_head as parse_request_head
from ._index import FramedRequest as FramedRequest
from ._index import RequestIndex as RequestIndex
from ._kernel_seek import KernelSeekableSocket as KernelSeekableSocket
from ._limits import KiB as KiB
from ._limits import Limits as Limits
from ._limits import MiB as MiB
from ._native import NATIVE_MARK as NATIVE_MARK
from ._native import BodySource as BodySource
from ._native import BodyStream as BodyStream
from ._native import HttpRequest as HttpRequest
from ._native import Response as Response
from ._native import native as native
from ._oneshot import Request as Request
from ._oneshot import parse_requests as parse_requests
from ._ordered import SAFE_METHODS as SAFE_METHODS
from ._ordered import DispatchPolicy as DispatchPolicy
from ._ordered import OrderedResponses as OrderedResponses
from ._ordered import ResponseSlot as ResponseSlot
from ._response import FramedResponse as FramedResponse
from ._response import ResponseHead as ResponseHead
from ._response import ResponseIndex as ResponseIndex
from ._response import parse_response_head as parse_response_head
from ._serialize import CONTINUE_100 as CONTINUE_100
from ._serialize import LAST_CHUNK as LAST_CHUNK
from ._serialize import HttpDate as HttpDate
from ._serialize import ResponseFraming as ResponseFraming
from ._serialize import chunk as chunk
from ._serialize import render_head as render_head
from ._serialize import status_line as status_line

__all__ = [
    "CONTINUE_100",
    "LAST_CHUNK",
    "MIN_BLOCK",
    "NATIVE_MARK",
    "SAFE_METHODS",
    "BodySource",
    "BodyStream",
    "BufferFull",
    "ConnectionTimeouts",
    "DispatchPolicy",
    "FramedRequest",
    "FramedResponse",
    "HttpDate",
    "HttpRequest",
    "KernelSeekableSocket",
    "KiB",
    "Limits",
    "MiB",
    "OrderedResponses",
    "ProtocolError",
    "Request",
    "RequestHead",
    "RequestIndex",
    "Response",
    "ResponseFraming",
    "ResponseHead",
    "ResponseIndex",
    "ResponseSlot",
    "SeekableBuffer",
    "ServerConnection",
    "actions",
    "chunk",
    "native",
    "parse_request_head",
    "parse_requests",
    "parse_response_head",
    "render_head",
    "run",
    "serve",
    "start_asyncio_server",
    "status_line",
]

__version__ = "0.1.0"
