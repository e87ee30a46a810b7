"""Running evaluations: the runner (one evaluation -> one record), comparability with the published protocol,
suites and eval-all, and the ``eval`` / ``eval-all`` commands."""
