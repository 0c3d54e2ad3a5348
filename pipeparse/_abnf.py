"""The HTTP/1.1 grammar pipeparse accepts, as compiled regexes (RFC 9110 §5, RFC 9112 §3-§7).

Strict by design: lines end with CRLF only (a bare LF or a bare CR is an error), no obs-fold,
no whitespace between a field name and its colon, field values are VCHAR / obs-text with
single SP or HTAB inside, NUL and other controls are rejected. Every pattern here is matched
against bytes a framer has already delimited, so none of them needs to look for an end.
"""

from __future__ import annotations

import re

__all__ = [
    "ABSOLUTE_FORM",
    "AUTHORITY_FORM",
    "CHUNK_LINE",
    "FIELD_LINE",
    "HEAD",
    "HOST",
    "REQUEST_LINE",
    "STATUS_LINE",
    "TOKEN",
]

# RFC 9110 §5.6.2: token = 1*tchar
_TCHAR = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]"
TOKEN = re.compile(_TCHAR + rb"+")
# RFC 9110 §5.5: field-value = *field-content; field-vchar = VCHAR / obs-text
_VCHAR_OBS = rb"[\x21-\x7e\x80-\xff]"
_FIELD_VALUE = rb"(?:" + _VCHAR_OBS + rb"(?:[\t \x21-\x7e\x80-\xff]*" + _VCHAR_OBS + rb")?)?"
# RFC 9112 §5: field-line = field-name ":" OWS field-value OWS
_FIELD_LINE = rb"(" + _TCHAR + rb"+):[ \t]*(" + _FIELD_VALUE + rb")[ \t]*\r\n"
FIELD_LINE = re.compile(_FIELD_LINE)
# RFC 9112 §3: request-line = method SP request-target SP HTTP-version
# The target is VCHARs (any of the four forms); the version digits are checked after matching.
_REQUEST_LINE = rb"(" + _TCHAR + rb"+) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])\r\n"
REQUEST_LINE = re.compile(_REQUEST_LINE)
# A whole head (with its blank line), validated in one C-speed match; captures the request line.
HEAD = re.compile(
    _REQUEST_LINE + rb"(?:" + _TCHAR + rb"+:[ \t]*" + _FIELD_VALUE + rb"[ \t]*\r\n)*\r\n"
)
# RFC 3986 §3.2.2: uri-host = IP-literal / IPv4address / reg-name (an IPv4address is a reg-name
# too); IP-literal = "[" ( IPv6address / IPvFuture ) "]". The IPv6 literal is matched loosely
# here and checked with `ipaddress` (group 1). port = *DIGIT (§3.2.3).
_UNRESERVED_SUB = rb"-A-Za-z0-9._~!$&'()*+,;="
_REG_NAME = rb"(?:[" + _UNRESERVED_SUB + rb"]|%[0-9A-Fa-f]{2})*"
_IP_LITERAL = rb"\[(?:([0-9A-Fa-f:.]+)|v[0-9A-Fa-f]+\.[" + _UNRESERVED_SUB + rb":]+)\]"
_URI_HOST = rb"(?:" + _IP_LITERAL + rb"|" + _REG_NAME + rb")"
# RFC 9110 §7.2: Host = uri-host [ ":" port ]
HOST = re.compile(_URI_HOST + rb"(?::[0-9]*)?")
# RFC 9112 §3.2.3: authority-form = uri-host ":" port (CONNECT only); the port is required.
AUTHORITY_FORM = re.compile(_URI_HOST + rb":[0-9]+")
# RFC 9112 §3.2.2: absolute-form = absolute-URI. pipeparse takes only the hierarchical form an
# HTTP client sends, ``scheme "://" authority path-abempty [ "?" query ]``, with no userinfo
# (RFC 9110 §4.2.4: a recipient treats userinfo as an error). Group 1 is the authority; the
# path and query are VCHARs (already checked by REQUEST_LINE), up to a "/" or "?".
ABSOLUTE_FORM = re.compile(rb"[A-Za-z][-A-Za-z0-9+.]*://([^/?#]*)(?:[/?#][\x21-\x7e]*)?")
# RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
STATUS_LINE = re.compile(rb"HTTP/([0-9])\.([0-9]) ([0-9]{3}) ([\t \x21-\x7e\x80-\xff]*)\r\n")
# RFC 9112 §7.1: chunk-size [ chunk-ext ] CRLF, chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS
# value ] ), value = token / quoted-string. At most 16 hex digits: larger is an overflow. One
# narrowing of the grammar: no BWS between the chunk size and the first ";" (h11 rejects it too).
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_EXT = rb";[ \t]*" + _TCHAR + rb"+(?:[ \t]*=[ \t]*(?:" + _TCHAR + rb"+|" + _QUOTED + rb"))?"
CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})((?:" + _CHUNK_EXT + rb"(?:[ \t]*" + _CHUNK_EXT + rb")*)?)\r\n"
)
