"""The pages' Content-Security-Policy, here so that every page layer (the shell, console, the rooms' views) can
build a page's own variant of it (`content_security_policy(img_src=...)`); shell/pages.py sets it on responses."""

from __future__ import annotations

# Pages run only our own static scripts and styles: no inline script or style, nothing from other hosts (stricter
# than `default-src 'self'`: each kind is allowed by name, the rest is 'none'), and framed only by this site and
# the sites of platforms that show our work page in a frame (clickjacking; `allow_framing_by`).
POLICY = {
    "default-src": "'none'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "font-src": "'self'",
    "connect-src": "'self'",
    "base-uri": "'none'",
    "form-action": "'self'",
}
_FRAMED_BY: list[str] = []


def allow_framing_by(origins: tuple[str, ...]) -> None:
    """The sites, besides ours, that may show our pages in a frame (the shell passes the platforms' at import)."""
    _FRAMED_BY[:] = origins


def content_security_policy(**extra: str) -> str:
    """The pages' CSP, with directives added or replaced (`worker_src="blob:"`)."""
    policy = {**POLICY, "frame-ancestors": " ".join(("'self'", *_FRAMED_BY)),
              **{name.replace("_", "-"): value for name, value in extra.items()}}
    return "; ".join(f"{name} {value}" for name, value in policy.items())
