"""nsqadmin's admin ACL (spec 5.4): who may run write actions, shared by the API and the pages."""

from __future__ import annotations

from collections.abc import Collection

from twisted.web.server import Request


def is_admin(request: Request, admin_users: Collection[str], acl_http_header: str) -> bool:
    """
    Whether C{request} may act: everyone when no C{--admin-user} is configured, otherwise only
    requests whose C{acl_http_header} (C{--acl-http-header}) holds one of C{admin_users}.
    """
    if not admin_users:
        return True
    value = request.getHeader(acl_http_header)
    return value is not None and value in admin_users
