"""``python -m processors.prompting [root]``: the template sanity checker (see sanity.py)."""

from processors.prompting.sanity import main

raise SystemExit(main())
