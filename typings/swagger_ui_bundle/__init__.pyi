# swagger-ui-bundle-v2 ships no py.typed: the one name /docs uses.
from pathlib import Path

swagger_ui_path: Path
