"""The application: the ``peersm`` command (composition root), its subcommands, the API client, the
demo and the local testnet."""
