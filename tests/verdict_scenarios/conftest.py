import sys
from pathlib import Path

# the scenario helpers (verdict_cases) are imported by module name
sys.path.insert(0, str(Path(__file__).parent))
