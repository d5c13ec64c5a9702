//! Images: resolving a pod's `image` to something runnable (built-ins, `--image-map`), and the built-in images themselves.
