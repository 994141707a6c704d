"""The errors llmedge raises: a small hierarchy with data on it, translated once at each edge.

The CLI turns an `LlmedgeError` into one line and `exit_code`; the server turns it into OpenAI's
error object with `http_status`, `error_type` and `code`. Messages say what to do next.
"""

from __future__ import annotations


class LlmedgeError(Exception):
    """Base of every error llmedge raises on purpose."""

    http_status = 500
    error_type = "server_error"
    code: str | None = None
    param: str | None = None
    exit_code = 1


class InvalidRequestError(LlmedgeError, ValueError):
    """A request or argument that cannot be honoured as given."""

    http_status = 400
    error_type = "invalid_request_error"
    exit_code = 2

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class ModelNotFoundError(LlmedgeError, LookupError):
    """A model name that is neither in the store nor in the model cards."""

    http_status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"
    param = "model"

    def __init__(self, name: str, hint: str | None = None) -> None:
        self.name = name
        message = f"model {name!r} is not in the store"
        super().__init__(f"{message}; {hint}" if hint else message)


class CorruptModelError(LlmedgeError):
    """A stored blob whose size or sha256 no longer matches its manifest."""

    code = "model_corrupt"

    def __init__(self, name: str, path: str, reason: str) -> None:
        self.name = name
        self.path = path
        self.reason = reason
        super().__init__(
            f"model {name!r} is damaged ({reason}): {path}; "
            f"run `llmedge rm {name}` and pull it again"
        )


class InvalidModelFileError(LlmedgeError, ValueError):
    """A file that is not a model llmedge can read (bad magic, truncated header, hostile sizes)."""

    http_status = 400
    error_type = "invalid_request_error"
    exit_code = 2

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path} is not a readable GGUF model: {reason}")


class ContextLengthExceededError(InvalidRequestError):
    """A prompt that leaves no room in the model's context window."""

    def __init__(self, prompt_tokens: int, ctx_tokens: int, param: str = "messages") -> None:
        self.prompt_tokens = prompt_tokens
        self.ctx_tokens = ctx_tokens
        super().__init__(
            f"the prompt is {prompt_tokens} tokens but the context holds {ctx_tokens}; "
            "shorten the conversation or load the model with a larger --ctx",
            param=param,
            code="context_length_exceeded",
        )


class InsufficientMemoryError(LlmedgeError, MemoryError):
    """A model that would not fit in the memory this host can give it."""

    http_status = 507
    code = "insufficient_memory"

    def __init__(self, needed_bytes: int, available_bytes: int, suggestion: str = "") -> None:
        self.needed_bytes = needed_bytes
        self.available_bytes = available_bytes
        gib = 1024**3
        needed, available = needed_bytes / gib, available_bytes / gib
        message = f"needs {needed:.2f} GiB but only {available:.2f} GiB is available"
        super().__init__(f"{message}; {suggestion}" if suggestion else message)


class BackendUnavailableError(LlmedgeError):
    """A backend that is unknown, or not installed or usable on this host."""

    http_status = 503
    code = "backend_unavailable"


class DownloadError(LlmedgeError):
    """A download that failed or produced a file whose hash does not match."""

    http_status = 502
    code = "download_failed"


class HubAccessError(DownloadError):
    """A repository the hub refuses to serve without (other) credentials: gated or private."""

    http_status = 403
    code = "hub_access_denied"

    def __init__(self, repo: str, status: int, *, gated: bool, page: str, token_set: bool) -> None:
        self.repo = repo
        self.status = status
        self.gated = gated
        if gated and token_set:
            hint = f"the token in HF_TOKEN has no access yet: accept the license at {page}"
        elif gated:
            hint = f"accept its license at {page}, then set HF_TOKEN to a token of that account"
        else:
            hint = "it may be private: set HF_TOKEN to a token that can read it"
        super().__init__(f"{repo} refused the download (HTTP {status}, gated={gated}); {hint}")


class HubUnreachableError(DownloadError):
    """No answer from the hub: offline, a dropped network, or HF_HUB_OFFLINE set."""

    code = "hub_unreachable"

    def __init__(self, endpoint: str, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"cannot reach {endpoint} ({reason}); check the connection or HF_ENDPOINT and pull "
            "again (a pull resumes where it stopped); models already stored keep working offline"
        )


class HashMismatchError(DownloadError):
    """A downloaded file whose hash differs from the one the hub published for it."""

    code = "hash_mismatch"

    def __init__(self, repo: str, path: str, expected: str, actual: str) -> None:
        self.repo = repo
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{repo}/{path} arrived damaged: its hash is {actual[:16]}…, the hub published "
            f"{expected[:16]}…; the download was deleted, nothing was stored; pull again"
        )


class ServerStartError(LlmedgeError, OSError):
    """The server could not start listening: a port taken, an address this host lacks."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        super().__init__(f"cannot listen on {host}:{port}: {reason}")


class DiskFullError(LlmedgeError, OSError):
    """A write that failed for lack of disk space (or quota) where llmedge keeps its files."""

    http_status = 507
    code = "insufficient_storage"

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        super().__init__(
            f"no disk space left to write {what} ({path}); free some space on that disk, or "
            "remove models with `llmedge rm NAME` (`llmedge list` shows their sizes)"
        )


class StoreError(LlmedgeError):
    """A store operation that cannot be carried out (no disk space, a name that is not allowed)."""


class PackedModelError(LlmedgeError):
    """A model folder that cannot be packed, or a blob that does not unpack into one."""

    code = "model_corrupt"


class QuantizationError(LlmedgeError):
    """A conversion or quantization that failed; the message names the step and the way out."""

    code = "quantization_failed"


class EngineBusyError(LlmedgeError):
    """Every slot and queue place for a model is taken; try again shortly."""

    http_status = 503
    code = "server_busy"
    retry_after_s = 2


class ModelUnloadingError(EngineBusyError):
    """A model that is being unloaded (or a server shutting down) takes no new work; retrying
    loads it again, or reaches the server that replaces this one."""

    code = "model_unloading"


class GenerationCancelledError(LlmedgeError):
    """A generation that stopped before it finished, because it was cancelled."""

    http_status = 499
    code = "generation_cancelled"


class DecodeError(LlmedgeError):
    """The engine failed to decode a batch."""


class RemoteServerError(LlmedgeError):
    """A server llmedge talks to as a client (the chat's --url) failed in a way the user can act
    on: it is down, or it refused the key."""

    code = "remote_server_error"


class ExtraNotInstalledError(LlmedgeError, ImportError):
    """An optional part of llmedge whose dependencies are not installed."""

    exit_code = 3

    def __init__(self, extra: str, missing: str) -> None:
        self.extra = extra
        super().__init__(f"this needs {missing}: install it with `pip install 'llmedge[{extra}]'`")


class ConversionError(LlmedgeError):
    """A model that could not be converted to, or run in, one target format."""

    code = "conversion_failed"

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"{target}: {reason}")
