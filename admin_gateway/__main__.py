"""``python -m admin_gateway``: same as the ``admin-gateway`` command."""

from admin_gateway.cli import main

main()
