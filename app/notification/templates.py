"""The SMS texts of SPEC section 9, in Korean, one template per event."""

from __future__ import annotations

from app.shared.events import Event, EventType

TEMPLATES: dict[EventType, str] = {
    EventType.COURSE_ORDERED: "[온라인스터디] 강좌 주문이 접수되었습니다. 강좌: {course_title} (주문번호 {order_no})",
    EventType.SEAT_CONFIRMED: "[온라인스터디] 좌석 확정: 대기하시던 강좌의 좌석이 확정되었습니다. 강좌: {course_title} (주문번호 {order_no})",
    EventType.COURSE_ORDER_CANCELLED: "[온라인스터디] 강좌 주문 취소가 완료되었습니다. (주문번호 {order_no})",
    EventType.LEARNING_STARTED: "[온라인스터디] 학습관리 시작: {manager_name} 매니저가 학습을 도와드립니다. "
    "(주문번호 {order_no})",
    EventType.LEARNING_CANCELLED: "[온라인스터디] 학습관리 취소: 학습관리가 취소되었습니다. (주문번호 {order_no})",
    EventType.FINAL_EVALUATION_REGISTERED: "[온라인스터디] 수료를 축하합니다! 최종 점수는 {score}점입니다. (주문번호 {order_no})",
}


def render(event: Event) -> str | None:
    """The text for this event, or None when the event sends no SMS."""
    template = TEMPLATES.get(event.event_type)
    if template is None:
        return None
    values = {
        "course_title": "",
        "manager_name": "",
        "score": "",
        **event.payload,
        "order_no": event.order_no,
    }
    return template.format(**values)
