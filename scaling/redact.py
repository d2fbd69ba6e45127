"""Secrets out of everything mcscale prints, logs or stores: one helper, used everywhere.

Why one module: a tracking URI such as ``postgresql+psycopg2://mlflow:PASSWORD@db/mlflow`` or
``https://user:TOKEN@mlflow.example`` passes through the run summary, warnings, error messages,
study.json and Ray's pickled experiment state. Each of those calls `redact_uri` (or `redact_text`
for free text that may embed a URI) so the password never leaves the process that was given it.

Rules: the password of a URL's user-info becomes ``***`` (the user name stays, it helps tell
accounts apart); query parameters whose name says secret (password, secret, token, key,
credential, signature, ...) get the value ``***``. Everything else is unchanged, so a redacted
URI still says where the data lives.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
_SECRET_PARAM = re.compile(r"pass|secret|token|credential|signature|(^|_)key$|apikey|api_key|auth", re.I)
# scheme://[user[:password]@]host... inside free text (stops at whitespace and quotes)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_SECRET_ENV_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY|(^|_)API_KEY$|SESSION_KEY", re.I)


def _userinfo_password(netloc: str) -> tuple[str, str | None, str]:
    """(user, password or None, host part) of a URL's netloc; user is '' without user-info."""
    if "@" not in netloc:
        return "", None, netloc
    userinfo, _, host = netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    return user, (password if sep else None), host


def uri_has_secret(uri: str | None) -> bool:
    """Whether `uri` carries a password in its user-info or a secret-named query parameter."""
    return bool(uri) and redact_uri(uri) != uri


def redact_uri(uri: str | None) -> str | None:
    """`uri` with its password (user-info) and secret query values replaced by ``***``."""
    if not uri or "://" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:  # not parseable as a URL: mask anything that looks like user:password@
        return re.sub(r"(://[^/@:\s]*:)[^/@\s]*@", rf"\1{MASK}@", uri)
    netloc = parts.netloc
    user, password, host = _userinfo_password(netloc)
    if password:
        netloc = f"{user}:{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(k) and v for k, v in pairs):
            query = urlencode([(k, MASK if _SECRET_PARAM.search(k) and v else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return uri
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Free text (an error message, a log line) with every URL in it redacted."""
    if not text or "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: redact_uri(m.group(0)) or "", text)


def is_secret_env(name: str, value: str = "") -> bool:
    """Whether an environment variable (by its name, or a URL value with a password) holds a secret."""
    return bool(_SECRET_ENV_NAME.search(name)) or uri_has_secret(value)


__all__ = ["MASK", "redact_uri", "redact_text", "uri_has_secret", "is_secret_env"]
