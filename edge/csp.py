"""The pages' Content-Security-Policy, here so that every page layer (the shell, console, the rooms' views) can
build a page's own variant of it (`content_security_policy(img_src=...)`); shell/pages.py sets it on responses."""

from __future__ import annotations

# MTurk shows an ExternalQuestion (our work page, #14) in a frame on its worker sites.
MTURK_WORKER_SITES = "https://www.mturk.com https://workersandbox.mturk.com"
# Pages run only our own static scripts and styles: no inline script or style, nothing from other hosts (stricter
# than `default-src 'self'`: each kind is allowed by name, the rest is 'none'), and framed only by this site and
# MTurk's worker sites (clickjacking).
POLICY = {
    "default-src": "'none'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "font-src": "'self'",
    "connect-src": "'self'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": f"'self' {MTURK_WORKER_SITES}",
}


def content_security_policy(**extra: str) -> str:
    """The pages' CSP, with directives added or replaced (`worker_src="blob:"`)."""
    policy = {**POLICY, **{name.replace("_", "-"): value for name, value in extra.items()}}
    return "; ".join(f"{name} {value}" for name, value in policy.items())
