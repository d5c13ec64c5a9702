//! The controller manager and scheduler: reconcilers that turn desired state in API objects into actual state.
