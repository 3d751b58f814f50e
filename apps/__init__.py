"""Apps a statebus node can serve (``serve --app MODULE``), each a package of its files."""
