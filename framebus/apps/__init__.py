"""Applications standing on the library, installed from the repository's
``producer/`` (the daemon and its sources) and ``consumers/`` (ready consumer
programs) folders. The library never imports them; they register their
`framebus` subcommands through the ``framebus.commands`` entry points."""
