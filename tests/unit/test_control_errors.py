"""An error the daemon meets in `convsync sync` makes the command exit as it would without a daemon."""

from __future__ import annotations

import pytest

from convsync import control
from convsync.cli import Exit, exit_code_for
from convsync.errors import (
    ApiError,
    AuthError,
    ConvsyncError,
    RedirectRefused,
    TransientError,
    UntrustedCertificate,
)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UntrustedCertificate("certificate verify failed"), Exit.TLS_UNTRUSTED),
        (RedirectRefused("redirected to https://elsewhere/"), Exit.CONFIG),
        (AuthError("bad key", status=401), Exit.AUTH),
        (TransientError("connection refused"), Exit.TRANSIENT),
        (ApiError("server error", status=500), Exit.TRANSIENT),
    ],
)
def test_an_error_keeps_its_exit_code_across_the_socket(error: ConvsyncError, code: Exit) -> None:
    """error_reply then raise_for gives an error with the same exit code as the original."""
    with pytest.raises(ConvsyncError) as raised:
        control.raise_for(control.error_reply(error))
    assert exit_code_for(raised.value) == code
    assert str(error) in str(raised.value)
