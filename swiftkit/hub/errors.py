"""Turn the hub clients' exceptions into one actionable line (`SwiftkitError`)."""

from __future__ import annotations

from swiftkit.errors import SwiftkitError

NETWORK_HINT = (
    "check the network, or try a mirror (--endpoint / HF_ENDPOINT, e.g. https://hf-mirror.com), "
    "the other hub (--hub modelscope / --hub hf), a longer --timeout, or a local model directory"
)
FALLBACK_HINT = (
    "check the network or proxy, set a mirror (HF_ENDPOINT / MODELSCOPE_ENDPOINT), "
    "or pass a local model directory"
)
TOKEN_HINT = "pass --token (or set HF_TOKEN / MODELSCOPE_API_TOKEN) with read access to it"


class HubUnreachable(SwiftkitError):
    """The endpoint did not answer (timeout, refused, dropped): another hub or mirror may work."""


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def translate(exc: BaseException, *, what: str, endpoint: str, timeout: float) -> SwiftkitError | None:
    """Map a huggingface_hub / httpx / modelscope error to a SwiftkitError; None if it is not a hub error."""
    from huggingface_hub import errors as hf

    names = [type(e).__name__ for e in _chain(exc)]
    for err in _chain(exc):
        status = _status(err)
        if isinstance(err, hf.GatedRepoError):
            if status == 403:
                return SwiftkitError(
                    f"{what} is gated and this token has no access to it (HTTP 403)",
                    "request access on the model page with the account the token belongs to",
                )
            return SwiftkitError(
                f"{what} is gated: downloading it needs an approved account's token (HTTP {status or 401})",
                "accept its terms on the model page, then " + TOKEN_HINT,
            )
        if isinstance(err, hf.RevisionNotFoundError):
            return SwiftkitError(
                f"revision not found: {what}", "check --revision (a branch, tag or commit of the repo)"
            )
        if isinstance(err, hf.RepositoryNotFoundError):
            if status == 401:
                return SwiftkitError(
                    f"{what} was not found on {endpoint} or is private (HTTP 401)",
                    "check the id; if it is private, " + TOKEN_HINT,
                )
            return SwiftkitError(
                f"repository not found on {endpoint}: {what} (HTTP {status or 404})",
                "check the id (org/name) and --hub; private repos also need --token",
            )
        if isinstance(err, hf.RemoteEntryNotFoundError):
            return SwiftkitError(
                f"a file listed by {what} is missing on {endpoint} (HTTP 404)",
                "retry later or pin --revision",
            )
        if isinstance(err, hf.OfflineModeIsEnabled):
            return SwiftkitError(
                f"offline mode (HF_HUB_OFFLINE) is on and {what} is not in the local cache",
                "unset HF_HUB_OFFLINE to download it, or pass a local model dir (see `swiftkit models`)",
            )
        if isinstance(err, hf.HfHubHTTPError) and status in (401, 403):
            return SwiftkitError(f"access to {what} denied by {endpoint} (HTTP {status})", TOKEN_HINT)
        if isinstance(err, hf.HfHubHTTPError) and status and status >= 500:
            return HubUnreachable(f"{endpoint} failed with HTTP {status} for {what}", NETWORK_HINT)
    # ModelScope's client raises its own classes (modelscope_hub.errors): matched by name, not imported.
    if "AuthenticationError" in names or "PermissionDeniedError" in names:
        return SwiftkitError(f"access to {what} denied by {endpoint}", TOKEN_HINT)
    if "FileDownloadError" in names:
        detail = " ".join(str(exc).split())
        if "Hash mismatch" in detail or "Size mismatch" in detail:
            return SwiftkitError(f"download verification failed for {what}: {detail}",
                                 "re-run the same command to fetch the bad files again (good ones are kept)")
        return HubUnreachable(f"download of {what} from {endpoint} failed: {detail}", NETWORK_HINT)
    if "NotExistError" in names:
        return SwiftkitError(
            f"repository not found on {endpoint}: {what}", "check the id (org/name) and --hub"
        )
    if any("Timeout" in n for n in names):
        return HubUnreachable(f"no answer from {endpoint} within {timeout:g}s for {what}", NETWORK_HINT)
    if any(
        n
        in (
            "ConnectError",
            "ConnectionError",
            "ConnectionRefusedError",
            "ConnectTimeout",
            "NameResolutionError",
        )
        for n in names
    ):
        return HubUnreachable(f"cannot connect to {endpoint} for {what}", NETWORK_HINT)
    if any(
        n in ("RemoteProtocolError", "ReadError", "ChunkedEncodingError", "IncompleteRead") for n in names
    ):
        return HubUnreachable(
            f"the connection to {endpoint} kept dropping while downloading {what}",
            "re-run the same command: finished files are kept; " + NETWORK_HINT,
        )
    return None
