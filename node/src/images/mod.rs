//! Images: resolving a pod's `image` to something runnable (built-ins, `--image-map`), and the built-in images themselves.
//!
//! No registry is reachable, so an image is either one of the built-ins (`skiff.dev/echo`,
//! `skiff.dev/grpc-echo`, `skiff.dev/pause`, run as `<builtin_exe> <name>`), or a command
//! from the `--image-map` file; anything else is an `ErrImagePull` with [`ImageError`]'s text.

mod builtin;
pub mod echo;
mod echo_ws;
mod glob;
pub mod grpc_echo;
mod image_map;
mod listen;
pub mod pause;
mod resolve;
mod shell_words;
mod signal;

pub use builtin::Builtin;
pub use image_map::{ImageMap, ImageMapEntry, ImageMapError, ImageTarget};
pub use listen::{ListenError, ServeError, bind};
pub use resolve::{ImageError, ImageResolver, ImageSource, ResolvedImage};
pub use signal::shutdown_signal;
