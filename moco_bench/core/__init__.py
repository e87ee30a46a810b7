"""Shared mechanisms at the bottom of the package, importing nothing above them: errors, the registry, project
paths, atomic writes, the environment record, configs, the distributed process group and the job launcher."""
