"""rq workers that generate networks: artifacts are loaded once per process and jobs run without forking."""
