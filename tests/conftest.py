import sys
from pathlib import Path

# tests import their helpers (resume_harness, resume_job) by module name
sys.path.insert(0, str(Path(__file__).parent))
