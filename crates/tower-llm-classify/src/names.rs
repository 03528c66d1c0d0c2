//! Names for the vocabulary's enums: one macro gives [`ErrorKind`](crate::ErrorKind)
//! and [`Provider`](crate::Provider) the same parsing, error and serde impls.

/// Implements, for an enum with `ALL` and `as_str()`: an error type for
/// unknown names that lists the valid ones, `FromStr`, and string-valued
/// `Serialize`/`Deserialize`.
macro_rules! named_enum {
    ($ty:ident, $unknown:ident, $what:literal) => {
        #[doc = concat!("The error returned when a string names no [`", stringify!($ty), "`].")]
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $unknown(pub String);

        impl std::fmt::Display for $unknown {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(
                    f,
                    concat!("unknown ", $what, " `{}` (expected one of: "),
                    self.0
                )?;
                for (i, item) in $ty::ALL.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(item.as_str())?;
                }
                f.write_str(")")
            }
        }

        impl std::error::Error for $unknown {}

        impl std::str::FromStr for $ty {
            type Err = $unknown;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $ty::ALL
                    .into_iter()
                    .find(|item| item.as_str() == s)
                    .ok_or_else(|| $unknown(s.to_owned()))
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                name.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use named_enum;
