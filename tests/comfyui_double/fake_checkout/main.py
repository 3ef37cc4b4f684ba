"""A "ComfyUI checkout" whose main.py runs the test double (for a worker's COMFYUI_DIR).

`python main.py --listen 127.0.0.1 --port P --disable-auto-launch ...` behaves like the real
one as far as a supervising worker can tell: it listens once started, answers ComfyUI's API,
exits on SIGTERM, and can be told to crash (see tests/comfyui_double/__main__.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.comfyui_double.__main__ import main

if __name__ == "__main__":
    main(["main.py", *sys.argv[1:]])
