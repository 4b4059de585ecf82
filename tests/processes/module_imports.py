"""Import one module and print, as JSON, the top-level packages that importing it loaded.

    python -m tests.processes.module_imports profilekit.methods
"""

import importlib
import json
import sys


def main(module: str) -> None:
    before = set(sys.modules)
    importlib.import_module(module)
    print(json.dumps(sorted({name.split(".")[0] for name in set(sys.modules) - before})))


if __name__ == "__main__":
    main(sys.argv[1])
