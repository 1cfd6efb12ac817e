"""`python -m worker [--burst]`: one generation worker on the Redis at REDIS_URL."""

import sys

from service.settings import get_settings
from worker.process import run_worker

if __name__ == "__main__":
    run_worker(get_settings(), burst="--burst" in sys.argv[1:])
