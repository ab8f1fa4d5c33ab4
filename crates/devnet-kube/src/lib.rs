pub mod discover;
