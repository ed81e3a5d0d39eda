"""Sub-commands of the `wspec` CLI; each module defines `register(subparsers)`."""
