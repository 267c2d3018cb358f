//! A number's media settings (relay, recording, working hours, after-hours rule,
//! greeting), a trunk's relay switch, and what a call's media left behind (relay
//! statistics, recording, voicemail).

use std::collections::HashMap;

use sqlx::any::AnyRow;

use super::{Result, Store, StoreError, col, flag, now_ms};
use crate::crm::hours::{AfterHours, Hours};
use crate::crm::model::{Millis, NumberId, TrunkId};
use crate::media::recording::Channels;

/// How the gateway handles the media of calls on one number.
#[derive(Debug, Clone, PartialEq)]
pub struct NumberMedia {
    /// The gateway relays RTP (its address in both legs' SDP).
    pub media_relay: bool,
    /// Answered calls are recorded (needs the relay).
    pub recording: bool,
    pub recording_channels: Channels,
    /// `None`: always open.
    pub hours: Option<Hours>,
    /// What happens outside the hours or when nobody answers; `None`: the call is
    /// rejected as before (busy / no answer).
    pub after_hours: Option<AfterHours>,
    /// File name of the uploaded greeting in the data dir's `greetings` folder.
    pub greeting: Option<String>,
}

impl Default for NumberMedia {
    fn default() -> Self {
        Self {
            media_relay: true,
            recording: false,
            recording_channels: Channels::Split,
            hours: None,
            after_hours: None,
            greeting: None,
        }
    }
}

pub(crate) const NUMBER_MEDIA_COLUMNS: &str =
    "media_relay, recording, recording_channels, hours, after_hours, greeting";

pub(crate) fn number_media_from_row(row: &AnyRow) -> Result<NumberMedia> {
    let channels: String = col(row, "recording_channels")?;
    let recording_channels = match channels.as_str() {
        "mixed" => Channels::Mixed,
        "split" => Channels::Split,
        other => {
            return Err(StoreError::Corrupt(format!(
                "column numbers.recording_channels holds '{other}'"
            )));
        }
    };
    let hours = match col::<Option<String>>(row, "hours")? {
        Some(text) => Some(
            serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|value| Hours::parse(&value).ok())
                .ok_or_else(|| StoreError::Corrupt("column numbers.hours".into()))?,
        ),
        None => None,
    };
    let after_hours = match col::<Option<String>>(row, "after_hours")? {
        Some(text) => Some(
            serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|value| AfterHours::parse(&value).ok())
                .ok_or_else(|| StoreError::Corrupt("column numbers.after_hours".into()))?,
        ),
        None => None,
    };
    Ok(NumberMedia {
        media_relay: col::<i64>(row, "media_relay")? == 1,
        recording: col::<i64>(row, "recording")? == 1,
        recording_channels,
        hours,
        after_hours,
        greeting: col(row, "greeting")?,
    })
}

/// A call's recording on disk, as the call log knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecording {
    /// File name in the data dir's `recordings` folder.
    pub file: String,
    pub duration_ms: u64,
    pub voicemail: bool,
}

impl Store {
    /// A number's media settings, from the configuration snapshot.
    pub async fn number_media(&self, id: &NumberId) -> Result<NumberMedia> {
        Ok(self
            .config_snapshot()
            .await?
            .media
            .get(id)
            .cloned()
            .unwrap_or_default())
    }

    /// Reads every number's media settings (the snapshot's loader).
    pub(crate) async fn all_number_media(&self) -> Result<HashMap<NumberId, NumberMedia>> {
        let rows = sqlx::query(dynamic_sql!(
            "SELECT id, {NUMBER_MEDIA_COLUMNS} FROM numbers"
        ))
        .fetch_all(self.reader())
        .await?;
        let mut all = HashMap::with_capacity(rows.len());
        for row in &rows {
            all.insert(NumberId(col(row, "id")?), number_media_from_row(row)?);
        }
        Ok(all)
    }

    /// A number's media settings read from the database (not the snapshot).
    pub async fn get_number_media(&self, id: &NumberId) -> Result<NumberMedia> {
        let row = sqlx::query(dynamic_sql!(
            "SELECT {NUMBER_MEDIA_COLUMNS} FROM numbers WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(self.reader())
        .await?
        .ok_or_else(|| StoreError::not_found("number", id.as_str()))?;
        number_media_from_row(&row)
    }

    pub async fn set_number_media(&self, id: &NumberId, media: &NumberMedia) -> Result<()> {
        let channels = match media.recording_channels {
            Channels::Mixed => "mixed",
            Channels::Split => "split",
        };
        let done = self
            .execute_change(
                sqlx::query(
                    "UPDATE numbers SET media_relay = $2, recording = $3, recording_channels = $4, \
             hours = $5, after_hours = $6, greeting = $7, updated_at = $8 WHERE id = $1",
                )
                .bind(id.as_str())
                .bind(flag(media.media_relay))
                .bind(flag(media.recording))
                .bind(channels)
                .bind(media.hours.as_ref().map(|h| h.to_json().to_string()))
                .bind(
                    media
                        .after_hours
                        .as_ref()
                        .map(|a| serde_json::to_string(a).unwrap_or_default()),
                )
                .bind(media.greeting.as_deref())
                .bind(now_ms()),
                None,
            )
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("number", id.as_str()));
        }
        self.config_changed().await;
        Ok(())
    }

    pub async fn set_trunk_media_relay(&self, id: &TrunkId, relay: bool) -> Result<()> {
        let done = self
            .execute_change(
                sqlx::query("UPDATE trunks SET media_relay = $2 WHERE id = $1")
                    .bind(id.as_str())
                    .bind(flag(relay)),
                None,
            )
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("trunk", id.as_str()));
        }
        self.config_changed().await;
        Ok(())
    }

    /// What the relay measured on a call, and its recording if one was made. A voicemail
    /// message also names the call's open activity as a call-back with a message.
    pub async fn set_call_media(
        &self,
        call_id: &str,
        stats: Option<&crate::media::relay::MediaStats>,
        recording: Option<&StoredRecording>,
    ) -> Result<()> {
        // Group-committed with the other calls' steps.
        self.steps()
            .submit(super::steps::StepJob::Media {
                call_id: call_id.to_owned(),
                stats: stats.map(|s| serde_json::to_string(s).unwrap_or_default()),
                recording: recording.cloned(),
            })
            .await
            .map(|_| ())
    }

    /// Recordings made before `before`, oldest first: the retention sweep's work.
    pub async fn recordings_before(
        &self,
        before: Millis,
        limit: i64,
    ) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT id, recording FROM calls WHERE recording IS NOT NULL AND started_at < $1 \
             ORDER BY started_at LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|row| Ok((col(row, "id")?, col(row, "recording")?)))
            .collect()
    }

    /// Forgets a call's recording once its file is gone.
    pub async fn clear_recording(&self, call_row_id: &str) -> Result<()> {
        sqlx::query("UPDATE calls SET recording = NULL, recording_ms = NULL WHERE id = $1")
            .bind(call_row_id)
            .execute(self.writer())
            .await?;
        Ok(())
    }
}
